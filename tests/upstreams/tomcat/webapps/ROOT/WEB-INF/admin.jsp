<%@ page contentType="text/plain; charset=UTF-8" session="false" %>RESOURCE:admin:<%= request.getServletPath() %><%= request.getPathInfo() == null ? "" : request.getPathInfo() %>
